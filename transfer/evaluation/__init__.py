"""Evaluations of a frozen backbone that need no framework (torch only)."""
