"""The htmx console: a server-rendered client of the GraphQL schema."""
