"""Shared pytest set-up. Area-specific fixtures live in each area's own helper module."""

import logging

logging.getLogger("pbnb").setLevel(logging.DEBUG)
