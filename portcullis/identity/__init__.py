"""Identity: who is calling. OIDC/OAuth 2.1 bearer tokens (JWKS per issuer), verified once and cached."""
