"""The admin side of the gateway: the REST API under ``/admin/api`` (with its OpenAPI document) and the web console
under ``/ui``. See docs/admin.md."""
