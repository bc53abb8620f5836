"""The kdweb command-line client: ``kdweb submit``, ``kdweb watch``, ``kdweb download`` through the REST API.

It needs no Django: ``requests``, ``PyYAML`` and ``tqdm`` only, so it starts at once (``kdweb_client.cli``).
"""
