"""The HTML pages, one module per area: runs (with teachers and data sets), teams and sharing, studies, public links.

May import the core (models, permissions, services, selectors, scorecard); not the API, wizard, worker or live.
"""
