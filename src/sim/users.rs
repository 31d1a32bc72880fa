//! Simulated users and whole routes: the rules of a VirtualService or an HTTPRoute with
//! their conditions (headers, cookies), weights, mirrors and `Set-Cookie` headers, and
//! the users who send requests through them and keep the cookies they are given.

use std::collections::BTreeMap;

use regex::Regex;
use serde_json::Value;

use super::{Destination, Rng, split_requests};

/// How one header is matched.
#[derive(Clone, Debug)]
pub enum Matcher {
    Exact(String),
    Prefix(String),
    /// Anchored: the whole value must match, as in Envoy.
    Regex(Regex),
}

impl Matcher {
    fn istio(m: &Value) -> Option<Matcher> {
        if let Some(v) = m["exact"].as_str() {
            return Some(Matcher::Exact(v.to_string()));
        }
        if let Some(v) = m["prefix"].as_str() {
            return Some(Matcher::Prefix(v.to_string()));
        }
        m["regex"].as_str().and_then(Matcher::regex)
    }

    fn regex(re: &str) -> Option<Matcher> {
        Regex::new(&format!("^(?:{re})$")).ok().map(Matcher::Regex)
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(v) => value == v,
            Matcher::Prefix(p) => value.starts_with(p.as_str()),
            Matcher::Regex(re) => re.is_match(value),
        }
    }
}

/// One rule of a route: the requests it takes (any of `matches`, each a set of header
/// conditions that must all hold; none means every request), where it sends them, and
/// what it answers.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    pub matches: Vec<Vec<(String, Matcher)>>,
    pub dests: Vec<Destination>,
    /// The `Set-Cookie` header each destination adds to its answers.
    pub dest_cookies: Vec<Option<String>>,
    /// The `Set-Cookie` header the rule adds to every answer.
    pub cookie: Option<String>,
    /// A destination that receives a copy of `percent` of the requests.
    pub mirror: Option<(Destination, u32)>,
}

impl Rule {
    fn takes(&self, headers: &BTreeMap<String, String>) -> bool {
        self.matches.is_empty()
            || self.matches.iter().any(|conditions| {
                conditions
                    .iter()
                    .all(|(name, m)| headers.get(name).is_some_and(|value| m.matches(value)))
            })
    }

    /// Whether the rule keeps users on the canary by a cookie: it matches a `Cookie`
    /// header and sends everything to a canary Service.
    fn sticky_to_canary(&self) -> bool {
        self.matches
            .iter()
            .any(|c| c.iter().any(|(name, _)| name == "cookie"))
            && self.dests.iter().any(|d| is_canary(d) && d.weight > 0)
            && self.dests.iter().all(|d| is_canary(d) || d.weight == 0)
    }
}

/// A route: its rules in the order they are tried. `users` is false for the load
/// tester's requests to the canary Service, which are not user traffic.
#[derive(Clone, Debug, Default)]
pub struct Route {
    pub key: String,
    pub rules: Vec<Rule>,
    pub users: bool,
}

impl Route {
    /// One rule sending everything to its destinations by weight.
    pub fn weighted(key: String, dests: Vec<Destination>, users: bool) -> Route {
        let dest_cookies = vec![None; dests.len()];
        Route {
            key,
            rules: vec![Rule {
                dests,
                dest_cookies,
                ..Default::default()
            }],
            users,
        }
    }

    /// Session affinity is on: a rule keeps the holders of a cookie on the canary.
    pub fn affinity(&self) -> bool {
        self.rules.iter().any(Rule::sticky_to_canary)
    }
}

fn is_canary(d: &Destination) -> bool {
    d.service_name.ends_with("-canary")
}

fn is_primary(d: &Destination) -> bool {
    d.service_name.ends_with("-primary")
}

/// The rules of a VirtualService's `http` routes; `resolve(host, weight)` finds each
/// destination's workload.
pub fn virtual_service_rules(
    spec: &Value,
    mut resolve: impl FnMut(&str, u32) -> Destination,
) -> Vec<Rule> {
    let empty = Vec::new();
    spec["http"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|http| {
            let route = http["route"].as_array()?;
            let single = route.len() == 1;
            let matches = http["match"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|m| {
                    m["headers"]
                        .as_object()
                        .map(|h| {
                            h.iter()
                                .filter_map(|(name, v)| {
                                    Some((name.to_ascii_lowercase(), Matcher::istio(v)?))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect();
            let set_cookie = |headers: &Value| {
                headers["response"]["add"]
                    .as_object()?
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
                    .and_then(|(_, v)| v.as_str().map(String::from))
            };
            let dests = route
                .iter()
                .map(|r| {
                    let host = r["destination"]["host"].as_str().unwrap_or_default();
                    let weight = r["weight"].as_u64().map(|w| w as u32).unwrap_or(if single {
                        100
                    } else {
                        0
                    });
                    resolve(host, weight)
                })
                .collect();
            let mirror = http["mirror"]["host"].as_str().map(|host| {
                let percent = http["mirrorPercentage"]["value"]
                    .as_f64()
                    .map(|p| p.round() as u32)
                    .unwrap_or(100);
                (resolve(host, 0), percent)
            });
            Some(Rule {
                matches,
                dests,
                dest_cookies: route.iter().map(|r| set_cookie(&r["headers"])).collect(),
                cookie: set_cookie(&http["headers"]),
                mirror,
            })
        })
        .collect()
}

/// The `Set-Cookie` header a list of Gateway API filters adds to the answers.
fn filter_cookie(filters: &Value) -> Option<String> {
    filters.as_array()?.iter().find_map(|f| {
        f["responseHeaderModifier"]["add"]
            .as_array()?
            .iter()
            .find(|h| {
                h["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("set-cookie"))
            })
            .and_then(|h| h["value"].as_str().map(String::from))
    })
}

/// The rules of an HTTPRoute. Gateway API orders rules by the precedence of their
/// matches; serin writes them most specific first, so they are tried in order.
pub fn http_route_rules(
    spec: &Value,
    mut resolve: impl FnMut(&str, u32) -> Destination,
) -> Vec<Rule> {
    let empty = Vec::new();
    spec["rules"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .filter_map(|rule| {
            let backends = rule["backendRefs"].as_array()?;
            let matches = rule["matches"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|m| {
                    m["headers"]
                        .as_array()
                        .unwrap_or(&empty)
                        .iter()
                        .filter_map(|h| {
                            let name = h["name"].as_str()?.to_ascii_lowercase();
                            let value = h["value"].as_str()?;
                            let matcher = match h["type"].as_str().unwrap_or("Exact") {
                                "RegularExpression" => Matcher::regex(value)?,
                                _ => Matcher::Exact(value.to_string()),
                            };
                            Some((name, matcher))
                        })
                        .collect()
                })
                .collect();
            let dests = backends
                .iter()
                .map(|b| {
                    let host = b["name"].as_str().unwrap_or_default();
                    resolve(host, b["weight"].as_u64().map(|w| w as u32).unwrap_or(1))
                })
                .collect();
            let mirror = rule["filters"].as_array().and_then(|filters| {
                filters.iter().find_map(|f| {
                    let m = &f["requestMirror"];
                    let host = m["backendRef"]["name"].as_str()?;
                    let percent = m["percent"].as_u64().map(|p| p as u32).or_else(|| {
                        let fraction = &m["fraction"];
                        let n = fraction["numerator"].as_u64()?;
                        let d = fraction["denominator"].as_u64().unwrap_or(100).max(1);
                        Some((n * 100 / d) as u32)
                    });
                    Some((resolve(host, 0), percent.unwrap_or(100)))
                })
            });
            Some(Rule {
                matches,
                dests,
                dest_cookies: backends
                    .iter()
                    .map(|b| filter_cookie(&b["filters"]))
                    .collect(),
                cookie: filter_cookie(&rule["filters"]),
                mirror,
            })
        })
        .collect()
}

/// Who the simulated users are: a share of them carries a header and a cookie.
#[derive(Clone, Debug, Default)]
pub struct UserConfig {
    /// The header a tagged user sends (`name`, `value`).
    pub header: Option<(String, String)>,
    /// The cookie a tagged user sends (`name`, `value`).
    pub cookie: Option<(String, String)>,
    /// The share of users that are tagged, in [0, 1].
    pub tagged_share: f64,
}

/// One simulated user: tagged or not, with the cookies routes gave them and the side
/// (canary or not) that served them last.
#[derive(Clone, Debug, Default)]
pub struct User {
    pub tagged: bool,
    pub jar: BTreeMap<String, String>,
    pub on_canary: bool,
}

impl User {
    fn headers(&self, config: &UserConfig) -> BTreeMap<String, String> {
        let mut headers = BTreeMap::new();
        let mut cookies: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if self.tagged {
            if let Some((name, value)) = &config.header {
                headers.insert(name.to_ascii_lowercase(), value.clone());
            }
            if let Some((name, value)) = &config.cookie {
                cookies.push(format!("{name}={value}"));
            }
        }
        if !cookies.is_empty() {
            headers.insert("cookie".to_string(), cookies.join("; "));
        }
        headers
    }

    /// Keeps (or, with `Max-Age` 0 or less, drops) the cookie a `Set-Cookie` header gives.
    fn take_cookie(&mut self, set_cookie: &str) {
        let mut parts = set_cookie.split(';').map(str::trim);
        let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let expired = parts.any(|a| {
            a.split_once('=').is_some_and(|(k, v)| {
                k.eq_ignore_ascii_case("max-age") && v.parse::<i64>().is_ok_and(|n| n <= 0)
            })
        });
        if expired {
            self.jar.remove(name);
        } else {
            self.jar.insert(name.to_string(), value.to_string());
        }
    }
}

/// The `rps` users of one route; the first `tagged_share` of them are tagged.
pub fn crowd(rps: u64, config: &UserConfig) -> Vec<User> {
    let tagged = (rps as f64 * config.tagged_share.clamp(0.0, 1.0)).round() as u64;
    (0..rps)
        .map(|i| User {
            tagged: i < tagged,
            ..Default::default()
        })
        .collect()
}

/// What one second of a route's traffic did.
#[derive(Debug, Default)]
pub struct Tick {
    /// Requests served per destination (index of rule, index of destination), and how
    /// many of them came from tagged users.
    pub served: Vec<(Destination, u64, u64)>,
    /// Copies sent to a mirror.
    pub mirrored: Vec<(Destination, u64)>,
    /// Users served by the canary last time and by the primary now, while a rule kept
    /// the canary's users on it.
    pub switches: u64,
}

/// Sends one request from each user through `route`.
pub fn serve(route: &Route, users: &mut [User], config: &UserConfig, rng: &mut Rng) -> Tick {
    let mut tick = Tick::default();
    let affinity = route.affinity();
    let mut by_rule: Vec<Vec<usize>> = vec![Vec::new(); route.rules.len()];
    for (i, user) in users.iter().enumerate() {
        let headers = user.headers(config);
        if let Some(r) = route.rules.iter().position(|rule| rule.takes(&headers)) {
            by_rule[r].push(i);
        }
    }
    for (rule, mut taken) in route.rules.iter().zip(by_rule) {
        // Who gets which destination is drawn at random; how many is exact.
        for i in (1..taken.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            taken.swap(i, j);
        }
        let weights: Vec<u32> = rule.dests.iter().map(|d| d.weight).collect();
        let shares = split_requests(taken.len() as u64, &weights);
        let mut next = taken.iter();
        for ((dest, share), cookie) in rule.dests.iter().zip(shares).zip(&rule.dest_cookies) {
            let mut tagged = 0;
            for &u in next.by_ref().take(share as usize) {
                let user = &mut users[u];
                tagged += u64::from(user.tagged);
                if affinity && user.on_canary && is_primary(dest) {
                    tick.switches += 1;
                }
                user.on_canary = is_canary(dest);
                for c in [cookie, &rule.cookie].into_iter().flatten() {
                    user.take_cookie(c);
                }
            }
            if share > 0 {
                tick.served.push((dest.clone(), share, tagged));
            }
        }
        if let Some((mirror, percent)) = &rule.mirror {
            let copies = taken.len() as u64 * u64::from((*percent).min(100)) / 100;
            if copies > 0 {
                tick.mirrored.push((mirror.clone(), copies));
            }
        }
    }
    tick
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Behaviour;
    use serde_json::json;

    fn dest(host: &str, weight: u32) -> Destination {
        Destination {
            namespace: "test".into(),
            service_host: format!("{host}.test.svc.cluster.local"),
            service_name: host.into(),
            workload: host
                .trim_end_matches("-primary")
                .trim_end_matches("-canary")
                .into(),
            weight,
            ready_replicas: 1,
            behaviour: Behaviour {
                error_rate: 0.0,
                median_latency_ms: 20.0,
            },
        }
    }

    fn served_at(tick: &Tick, service: &str) -> (u64, u64) {
        tick.served
            .iter()
            .filter(|(d, _, _)| d.service_name == service)
            .fold((0, 0), |(n, t), (_, a, b)| (n + a, t + b))
    }

    #[test]
    fn only_the_tagged_users_reach_the_canary_of_an_ab_test() {
        let vs = json!({"http": [
            {"match": [{"headers": {"x-canary": {"exact": "insider"}}}], "route": [
                {"destination": {"host": "podinfo-primary"}, "weight": 0},
                {"destination": {"host": "podinfo-canary"}, "weight": 100}]},
            {"route": [{"destination": {"host": "podinfo-primary"}, "weight": 100}]},
        ]});
        let route = Route {
            key: "test/podinfo".into(),
            rules: virtual_service_rules(&vs, dest),
            users: true,
        };
        let config = UserConfig {
            header: Some(("X-Canary".into(), "insider".into())),
            cookie: None,
            tagged_share: 0.2,
        };
        let mut users = crowd(100, &config);
        let tick = serve(&route, &mut users, &config, &mut Rng::new(1));
        assert_eq!(served_at(&tick, "podinfo-canary"), (20, 20));
        assert_eq!(served_at(&tick, "podinfo-primary"), (80, 0));
        assert!(tick.mirrored.is_empty());
    }

    #[test]
    fn a_cookie_condition_matches_the_users_cookie_header() {
        let route = json!({"rules": [
            {"matches": [{"headers": [{"name": "Cookie", "type": "RegularExpression", "value": "^(.*?;)?(canary=always)(;.*)?$"}]}],
             "backendRefs": [{"name": "podinfo-primary", "weight": 0}, {"name": "podinfo-canary", "weight": 100}]},
            {"backendRefs": [{"name": "podinfo-primary", "weight": 100}]},
        ]});
        let route = Route {
            key: "test/podinfo".into(),
            rules: http_route_rules(&route, dest),
            users: true,
        };
        let config = UserConfig {
            header: None,
            cookie: Some(("canary".into(), "always".into())),
            tagged_share: 0.1,
        };
        let mut users = crowd(50, &config);
        let tick = serve(&route, &mut users, &config, &mut Rng::new(3));
        assert_eq!(served_at(&tick, "podinfo-canary"), (5, 5));
    }

    #[test]
    fn a_mirror_copies_its_share_without_serving_anyone() {
        let route = json!({"rules": [{"backendRefs": [{"name": "podinfo-primary", "weight": 100}, {"name": "podinfo-canary", "weight": 0}],
            "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "podinfo-canary"}, "percent": 40}}]}]});
        let route = Route {
            key: "test/podinfo".into(),
            rules: http_route_rules(&route, dest),
            users: true,
        };
        let config = UserConfig::default();
        let mut users = crowd(100, &config);
        let tick = serve(&route, &mut users, &config, &mut Rng::new(3));
        assert_eq!(served_at(&tick, "podinfo-primary"), (100, 0));
        assert_eq!(served_at(&tick, "podinfo-canary"), (0, 0));
        assert_eq!(tick.mirrored.len(), 1);
        assert_eq!(tick.mirrored[0].1, 40);
    }

    #[test]
    fn users_keep_the_canarys_cookie_and_stay_on_it() {
        let vs = |weight: u32| {
            json!({"http": [
                {"match": [{"headers": {"Cookie": {"regex": ".*canary-user=.*abc.*"}}}], "route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": 0},
                    {"destination": {"host": "podinfo-canary"}, "weight": 100}]},
                {"route": [
                    {"destination": {"host": "podinfo-primary"}, "weight": 100 - weight},
                    {"destination": {"host": "podinfo-canary"}, "weight": weight,
                     "headers": {"response": {"add": {"Set-Cookie": "canary-user=abc; Max-Age=600"}}}}]},
            ]})
        };
        let config = UserConfig::default();
        let mut users = crowd(100, &config);
        let mut rng = Rng::new(5);
        let mut on_canary = 0;
        for weight in [10, 20, 30, 40, 50] {
            let route = Route {
                key: "test/podinfo".into(),
                rules: virtual_service_rules(&vs(weight), dest),
                users: true,
            };
            assert!(route.affinity());
            let tick = serve(&route, &mut users, &config, &mut rng);
            assert_eq!(tick.switches, 0, "nobody leaves the canary");
            let now = served_at(&tick, "podinfo-canary").0;
            assert!(now >= on_canary, "{now} < {on_canary}");
            on_canary = now;
        }
        assert!(on_canary > 50, "the canary's users add up: {on_canary}");
        // Without the sticky rule, users who were on the canary move back.
        let plain = Route::weighted(
            "test/podinfo".into(),
            vec![dest("podinfo-primary", 100), dest("podinfo-canary", 0)],
            true,
        );
        assert!(!plain.affinity());
        assert_eq!(serve(&plain, &mut users, &config, &mut rng).switches, 0);
        let mut user = User::default();
        user.take_cookie("canary-user=abc; Max-Age=600");
        assert_eq!(user.jar.get("canary-user").map(String::as_str), Some("abc"));
        user.take_cookie("canary-user=abc; Max-Age=-1");
        assert!(user.jar.is_empty());
    }
}
