"""The HTTP contract: request and response models, content-state rules, API errors.

`models.decode(...)` turns a request body into a typed request or raises `errors.BadRequest`
naming the dotted field; `responses` holds the answers; `content` the per-type content rules;
`scope` what an API key may reach.
"""
