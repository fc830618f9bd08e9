"""Allow `python -m agent` where the `ccs-agent` console script is not installed."""

from agent.cli import main

main()
