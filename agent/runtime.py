"""Process-wide settings for processes that hold thousands of connections at once: the agent
(a simulated fleet above all) and the control plane's workers."""

import gc
import resource

# Allocations between two young collections (CPython's default is 700): a fan-out allocates
# a few objects per request, and with the default the collector ran every few hundred hosts
# and, every so often, walked the whole heap of thousands of connections (17 % of a worker's
# time on new channels, measured with py-spy).
GC_THRESHOLDS = (50_000, 20, 100)


def collector_tune() -> None:
    """Leave what start-up allocated out of every collection (it lives as long as the process)
    and collect young objects less often."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def raise_nofile_limit() -> int:
    """Raise the open-files soft limit to the hard limit (each pooled channel, and each
    connection an agent serves, is one descriptor); returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
