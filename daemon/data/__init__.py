"""daemon/data"""
