"""The kernel every other layer builds on: errors, the record schema, profiles, prices, pool configs, paper defaults.

It imports nothing else from the project.
"""
