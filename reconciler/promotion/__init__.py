"""Promotions: moving what staging runs to production through signed, policy-checked approvals.

* ``policy``     the pipelines, approvers and rules from the daemon's configuration (never from Git);
                 windows, soak time and approval counting as pure functions
* ``signing``    HMAC-signed approval/request payloads: verification, replay refusal
* ``edit``       the change a promotion makes: ``images:`` entries (and optionally named files) of a
                 kustomization, edited so that nothing else in the target file changes
* ``store``      the ``Promotion`` custom resources (``promotions.reconciler.dev``) and their Events
* ``gitwriter``  the one commit per promotion: written, pushed without force, rebased on races, found
                 again by its ``Promotion:`` trailer so it is never written twice
* ``controller`` the state machine the leader runs, and the operations the API calls
* ``api``        the HTTP routes under ``/api/v1/promotions``
* ``cli``        ``promote``, ``promotions``, ``approve``, ``reject``, ``rollback``
"""
