"""Use cases of the cases app, one module per side of the business.

- ``common``: locking and applying a transition with its audit event.
- ``intake``: the merchant's side (file, verify, respond, withdraw).
- ``review``: the staff side (assign, review documents, transitions).
- ``execution``: carrying out an approved case in the background.

Import from the module: ``from cases.services.review import case_transition``.
"""
