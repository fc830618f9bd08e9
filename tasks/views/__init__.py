"""The operator console's pages of tasks: launch, watch and steer, history, hosts. Server-
rendered; htmx refreshes their live parts. They call the services and selectors the API calls."""
