"""CCS host agent: the encrypted channel, signed-job verification and the job executor."""

__version__ = "0.2.0"
