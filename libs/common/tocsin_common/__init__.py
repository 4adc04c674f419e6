"""Tocsin's shared library: settings, configuration model and helpers used by every service."""
