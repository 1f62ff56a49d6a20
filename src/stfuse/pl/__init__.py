"""sf.pl."""
