"""workers/strategies"""
