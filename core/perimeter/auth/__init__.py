"""Authentication and authorisation: who is calling (API keys, OIDC JWTs), what they may do
(scopes) and what they may see (tenant + per-document groups).

Submodules import their heavy dependencies (SQLAlchemy tables, PyJWT) themselves; importing this
package does nothing.
"""
