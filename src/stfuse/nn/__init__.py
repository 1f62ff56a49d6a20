"""sf.nn"""
