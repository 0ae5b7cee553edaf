"""The test kit: builders and helpers every test module may import (tests import the kit, never each other).

`kit.cli` drives `docread ...` in-process, `kit.serving` runs the app on a loopback thread, `kit.native`
builds transformers' own model and processor beside docread's reader, `kit.fuzz` mutates seed files.
Fixtures live in tests/conftest.py; the kit holds plain functions and classes.
"""
