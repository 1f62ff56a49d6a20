"""sf.pl"""
