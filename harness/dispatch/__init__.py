"""Decision logic shared by the simulator and the live dispatcher: DispatchCore, instance state, latency model, policies.

No I/O and no clock of its own: a driver feeds it arrivals and completions.
"""
