"""Talking to the network politely: one HTTP module (cache, pacing, retries), byte ranges, request
budgets and the policy of public hosts.
"""
