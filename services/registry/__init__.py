"""registry: Agencies, the service-provider directory (Open Referral HSDS), and the OAuth 2.0 authorization server."""
