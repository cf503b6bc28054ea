"""The portfolio plugin: how a portfolio's capital is split across its assets.

``allocation`` holds the math (pure functions), ``cli`` the operator's
``corec portfolio`` commands.
"""
