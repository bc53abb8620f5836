"""The live websockets: each event's schema and its sends (events), the consumers, and their routes.

events imports no other jobs module at import time; consumers may import the core (permissions, selectors, models).
"""
