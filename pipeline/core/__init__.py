"""The small core every other package stands on: params schema, paths, errors, file helpers and
the way a command starts and ends. It imports nothing else of the project."""
