"""Pure decisions, no I/O: routing, the learned scorer, pricing, answer checks and the cascade, the
fault policy, prompt layout and the cache TTL choice, grading and calibration. Imports jobs and the
standard library (plus pydantic, jsonschema and the SDK's exception types); never Redis or the network."""
