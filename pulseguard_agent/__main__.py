"""`python -m pulseguard_agent ...`: see cli.py."""

from pulseguard_agent.cli import main

raise SystemExit(main())
