"""One module per tab; each has ``build(ctx, session)`` returning an object with
``reset_outputs`` / ``reset_values(session)`` so that a new image resets every tab."""
