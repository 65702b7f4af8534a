"""Inbound webhooks: GitHub and generic JSON deliveries turned into Live Activity streams.

`POST /api/webhooks/{name}` runs a delivery through three steps:

1. authenticate it with the webhook's secret (`auth`): GitHub's `X-Hub-Signature-256`, or the
   generic kind's `X-Webhook-Secret` header, compared in constant time;
2. map it to stream calls, sans-IO (`github`, `generic`; the calls are `plan.Plan`s);
3. run the calls against the Live Activities service and log the delivery
   (`engine.server.service.webhooks`).

The configuration of each webhook (`[[webhooks]]` in `lockstep.toml`) is a `config.WebhookConfig`.
"""
