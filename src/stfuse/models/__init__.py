"""sf.models"""
