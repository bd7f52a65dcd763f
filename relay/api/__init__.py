"""The JSON query API: jobs, workflows and raw callbacks, behind the admin bearer token."""
