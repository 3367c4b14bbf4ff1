#!/usr/bin/env python3
"""Thin entry point: `python run.py [serve] [-c conf/gateway.yaml]`, `python run.py --demo`."""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
