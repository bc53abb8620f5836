"""The live websockets: each event's schema (events, checked by schema) and its sends, the consumers, their routes.

events and schema import only jobs.models; consumers may import the core (permissions, selectors, models).
"""
