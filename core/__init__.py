"""The ground floor: policies and building blocks every other package may use (egress, limits).

``core`` imports no app of Nexus and reads no environment: settings reach it as arguments or
through ``django.conf.settings``. Its one model is ``ApiKey`` (personal API keys, ``apikeys.py``).
"""
