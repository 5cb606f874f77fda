//! Methods and paths the gateway has no route for: a JSON 404 or 405, and
//! no trace of the client's text in the metrics or the runtime-fit report
//! (a label taken from a made-up method once grew the gateway by 186 KB a
//! request).

use anyhow::{Context as _, ensure};
use serde_json::Value;

use crate::{
    http::{Conn, Request},
    suite::{Case, Check, Ctx},
};

pub(crate) const CASES: &[Case] = &[
    Case { name: "routing/made-up-methods-are-405-json", run: made_up_methods },
    Case { name: "routing/no-client-method-in-metrics", run: no_client_method_in_metrics },
    Case { name: "routing/no-client-method-in-runtime-fit", run: no_client_method_in_runtime_fit },
    Case { name: "routing/made-up-method-on-unknown-path-is-404", run: made_up_method_unknown_path },
    Case { name: "routing/wrong-method-is-405-json", run: wrong_method },
    Case { name: "routing/unknown-path-is-404-json", run: unknown_path },
    Case { name: "routing/dot-segments-are-404-json", run: dot_segments },
    Case { name: "routing/long-path-is-404-json", run: long_path },
    Case { name: "routing/long-method-is-405-json", run: long_method },
    Case { name: "routing/accept-xml-still-gets-json", run: accept_xml },
];

/// The made-up methods this run sends; the metrics must never show them.
const MADE_UP: &str = "QZXHOSTILE";

/// Methods the gateway may use as a label (the standard ones and `_OTHER`).
const LABELS: &[&str] =
    &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "_OTHER"];

fn made_up_methods(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let mut conn = Conn::open(ctx.addr).await?;
        for i in 0..50 {
            let method = format!("{MADE_UP}{i:03}");
            let response = conn.request(&Request::new(&method, "/healthz").keep_alive()).await?;
            let message = response.expect_error(405, "method_not_allowed").with_context(|| method.clone())?;
            ensure!(!message.contains(MADE_UP), "the message echoes the method: {message}");
        }
        Ok("50 made-up methods on /healthz, one connection: 405 method_not_allowed each".into())
    })
}

fn no_client_method_in_metrics(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let response = ctx.send(&Request::get("/metrics")).await?;
        ensure!(response.status() == 200, "/metrics answered {}", response.status());
        let text = response.text();
        ensure!(!text.contains(MADE_UP), "a client's method became a label in /metrics");
        let series = text.lines().filter(|l| !l.starts_with('#')).count();
        Ok(format!("{series} series, none naming a made-up method"))
    })
}

fn no_client_method_in_runtime_fit(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let report = ctx.send(&Request::get("/v1/debug/runtime-fit")).await?.expect_ok_json()?;
        let routes = report["routes"].as_array().context("no `routes` list")?;
        let strays: Vec<&Value> =
            routes.iter().filter(|r| !r["method"].as_str().is_some_and(|m| LABELS.contains(&m))).collect();
        ensure!(strays.is_empty(), "monitors keyed by a client's method: {strays:?}");
        let healthz_other =
            routes.iter().filter(|r| r["path"] == "/healthz" && r["method"] == "_OTHER").count();
        ensure!(healthz_other <= 1, "{healthz_other} _OTHER monitors for /healthz");
        Ok(format!("{} monitors, each keyed by a standard method or _OTHER", routes.len()))
    })
}

fn made_up_method_unknown_path(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let response = ctx.send(&Request::new(&format!("{MADE_UP}X"), "/no/such/route")).await?;
        response.expect_error(404, "not_found")?;
        Ok("404 not_found".into())
    })
}

fn wrong_method(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let topic = ctx.topic_path(&ctx.match_id("none"));
        for (method, path) in [("DELETE", topic.as_str()), ("PUT", ctx.publish_path()), ("POST", "/healthz")]
        {
            let response = ctx.send(&ctx.read(path).with_method(method)).await?;
            response.expect_error(405, "method_not_allowed").with_context(|| format!("{method} {path}"))?;
        }
        Ok(format!("DELETE {topic}, PUT {}, POST /healthz: 405 method_not_allowed", ctx.publish_path()))
    })
}

fn unknown_path(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let message = ctx.get("/v1/nope").await?.expect_error(404, "not_found")?;
        ensure!(message == "no route for /v1/nope", "message {message:?}");
        Ok(format!("404 not_found: {message}"))
    })
}

fn dot_segments(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let response = ctx.get("/v1/../../../etc/passwd").await?;
        response.expect_error(404, "not_found")?;
        ensure!(!response.text().contains("root:"), "served a file");
        Ok("404 not_found, nothing served".into())
    })
}

fn long_path(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let path = format!("/v1/{}", "a".repeat(8 * 1024));
        ctx.get(&path).await?.expect_error(404, "not_found")?;
        Ok("8 KiB path: 404 not_found".into())
    })
}

fn long_method(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let method = "Q".repeat(1024);
        let response = ctx.send(&Request::new(&method, "/healthz")).await?;
        let message = response.expect_error(405, "method_not_allowed")?;
        ensure!(!message.contains(&method[..16]), "the message echoes the method");
        Ok("1 KiB method token: 405 method_not_allowed".into())
    })
}

fn accept_xml(ctx: &Ctx) -> Check<'_> {
    Box::pin(async move {
        let request = ctx.read("/v1/nope").header("Accept", "application/xml");
        ctx.send(&request).await?.expect_error(404, "not_found")?;
        Ok("Accept: application/xml: still the JSON error".into())
    })
}
