"""The AAA plugin (seed 003 §1): authentication, authorization and audit.

Passwords are hashed with argon2id, logins return HS256 JWTs signed with
``COREC_JWT_SECRET``, every decision lands in ``audit_log``. ``main.AAAPlugin`` is
the plugin; ``corec users`` manages accounts.
"""
