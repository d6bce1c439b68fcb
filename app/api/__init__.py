"""The one GraphQL schema, served at /graphql and executed in-process by the console."""
