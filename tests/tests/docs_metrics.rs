//! `docs/metrics.md` lists every metric the code emits, and only those: the names, types and
//! label keys of its tables against every `counter!`, `gauge!` and `histogram!` (with or without
//! `metrics::`) in the workspace's Rust sources. A static check: it reads files, runs no node.
//!
//! A metric's name is a string literal in the macro call, a `const NAME: &str` defined in the
//! scanned sources, or a helper's parameter (a closure in the same function, or the function
//! around the call), and then the literals its calls pass (`gauge("meridian_x", v)`). A name or
//! labels made any other way (`format!`, a label slice) fail the test with the place: make the
//! check see it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where the workspace's code lives (relative to the workspace root); `target` is skipped.
const SCANNED: &[&str] = &["engine", "node", "ffi", "tests/src", "examples"];

/// The metric macros of the `metrics` crate.
const KINDS: &[&str] = &["counter", "gauge", "histogram"];

/// What the code or the document says of one metric.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Metric {
    kind: String,
    labels: BTreeSet<String>,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Index just past the string literal opening at `i` (a `"`), escapes honoured.
fn skip_string(s: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// Index just past a raw string opening at `i` (`r`, then `#`s, then `"`), if one opens there.
fn skip_raw_string(s: &[u8], i: usize) -> Option<usize> {
    let hashes = s[i + 1..].iter().take_while(|&&b| b == b'#').count();
    if s.get(i + 1 + hashes) != Some(&b'"') {
        return None;
    }
    let close: Vec<u8> = std::iter::once(b'"')
        .chain(std::iter::repeat_n(b'#', hashes))
        .collect();
    let body = i + 2 + hashes;
    let end = s[body..]
        .windows(close.len())
        .position(|w| w == close.as_slice())
        .map_or(s.len(), |p| body + p + close.len());
    Some(end)
}

/// Index just past a char literal opening at `i` (a `'`), or `None` for a lifetime.
fn skip_char(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i + 1) == Some(&b'\\') {
        return s[i + 3..]
            .iter()
            .position(|&b| b == b'\'')
            .map(|p| i + 3 + p + 1);
    }
    let len = match s.get(i + 1)? {
        b if *b < 0x80 => 1,
        b if *b >= 0xF0 => 4,
        b if *b >= 0xE0 => 3,
        _ => 2,
    };
    (s.get(i + 1 + len) == Some(&b'\'')).then_some(i + 2 + len)
}

/// The source with its comments blanked (same byte offsets, newlines kept), literals intact.
fn strip_comments(src: &str) -> String {
    let s = src.as_bytes();
    let mut out = Vec::with_capacity(s.len());
    let blank = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend(bytes.iter().map(|&b| if b == b'\n' { b'\n' } else { b' ' }));
    };
    let mut i = 0;
    while i < s.len() {
        let prev_ident = i > 0 && is_ident(s[i - 1]);
        let end = match s[i] {
            b'/' if s.get(i + 1) == Some(&b'/') => {
                let end = s[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(s.len(), |p| i + p);
                blank(&mut out, &s[i..end]);
                i = end;
                continue;
            }
            b'/' if s.get(i + 1) == Some(&b'*') => {
                let (mut j, mut depth) = (i + 2, 1);
                while j < s.len() && depth > 0 {
                    if s[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if s[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, &s[i..j.min(s.len())]);
                i = j.min(s.len());
                continue;
            }
            b'"' => skip_string(s, i),
            b'r' if !prev_ident || (s[i - 1] == b'b' && (i < 2 || !is_ident(s[i - 2]))) => {
                skip_raw_string(s, i).unwrap_or(i + 1)
            }
            b'\'' => skip_char(s, i).unwrap_or(i + 1),
            _ => i + 1,
        };
        out.extend_from_slice(&s[i..end]);
        i = end;
    }
    String::from_utf8(out).expect("comments blanked byte for byte")
}

/// Index of the delimiter closing the one opening at `open`, strings and chars skipped.
fn matching_close(s: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    let mut i = open;
    while i < s.len() {
        match s[i] {
            b'"' => {
                i = skip_string(s, i);
                continue;
            }
            b'\'' => {
                i = skip_char(s, i).unwrap_or(i + 1);
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len()
}

/// The arguments between `open` and its closing delimiter, split at top-level commas.
fn arguments(s: &[u8], open: usize) -> Vec<String> {
    let close = matching_close(s, open);
    let (mut args, mut start, mut i) = (Vec::new(), open + 1, open + 1);
    while i < close {
        match s[i] {
            b'"' => i = skip_string(s, i),
            b'\'' => i = skip_char(s, i).unwrap_or(i + 1),
            b'(' | b'[' | b'{' => i = matching_close(s, i) + 1,
            b',' => {
                args.push(String::from_utf8_lossy(&s[start..i]).trim().to_string());
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    let last = String::from_utf8_lossy(&s[start..close]).trim().to_string();
    if !last.is_empty() {
        args.push(last);
    }
    args
}

/// The text of a plain string literal, if `arg` is one.
fn literal(arg: &str) -> Option<String> {
    let inner = arg.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then(|| inner.to_string())
}

/// The body of the innermost `fn` around byte `at` of `code`, with where its `fn` stands.
fn enclosing_fn(code: &str, at: usize) -> Option<(usize, &str)> {
    let s = code.as_bytes();
    let mut best: Option<(usize, usize, usize)> = None;
    for (i, _) in code.match_indices("fn") {
        let word = (i == 0 || !is_ident(s[i - 1]))
            && s.get(i + 2).is_some_and(|b| b.is_ascii_whitespace());
        if !word || i > at {
            continue;
        }
        let Some(open) = s[i..].iter().position(|&b| b == b'{' || b == b';') else {
            continue;
        };
        if s[i + open] == b';' {
            continue; // no body
        }
        let close = matching_close(s, i + open);
        if i + open < at && at < close && best.is_none_or(|(_, o, _)| o < i + open) {
            best = Some((i, i + open, close));
        }
    }
    best.map(|(f, open, close)| (f, &code[open..(close + 1).min(code.len())]))
}

/// A parameter's name in one `name: Type` (or `name`) of a parameter list.
fn param_name(param: &str) -> &str {
    let name = param.split(':').next().unwrap_or("").trim();
    name.strip_prefix("mut ").unwrap_or(name).trim()
}

/// The helper that passes its parameter `param` on as the name of the metric emitted at byte
/// `at`: a closure (`let NAME = |param, ...|`) or the function around it (`fn NAME(param, ...)`),
/// with the parameter's position and the code its calls stand in.
fn helper_of<'a>(code: &'a str, at: usize, param: &str) -> Option<(String, usize, &'a str)> {
    let s = code.as_bytes();
    let (fn_at, body) = enclosing_fn(code, at)?;
    let bars: Vec<usize> = code[fn_at..at]
        .match_indices('|')
        .map(|(b, _)| fn_at + b)
        .collect();
    for &bar in bars.iter().rev() {
        let before = code[..bar].trim_end();
        if !(before.ends_with('=') || before.ends_with("move")) {
            continue;
        }
        let end = bar + 1 + code[bar + 1..].find('|')?;
        let params: Vec<&str> = code[bar + 1..end].split(',').map(param_name).collect();
        let Some(index) = params.iter().position(|p| *p == param) else {
            continue; // another closure
        };
        let statement = &code[..bar];
        let name = statement[statement.rfind("let ")? + 4..]
            .split(['=', ':'])
            .next()?;
        return Some((param_name(name).to_string(), index, body));
    }
    let signature = code[fn_at + 2..].trim_start();
    let name: String = signature
        .bytes()
        .take_while(|&b| is_ident(b))
        .map(char::from)
        .collect();
    let open = fn_at + 2 + code[fn_at + 2..].find('(')?;
    let index = arguments(s, open)
        .iter()
        .position(|p| param_name(p) == param)?;
    Some((name, index, code))
}

/// The names the calls of `helper` in `scope` pass as its argument `index`, or why one cannot
/// be read.
fn helper_names(helper: &str, index: usize, scope: &str) -> Result<BTreeSet<String>, String> {
    let s = scope.as_bytes();
    let mut names = BTreeSet::new();
    for (i, _) in scope.match_indices(&format!("{helper}(")) {
        let definition = scope[..i].trim_end().ends_with("fn");
        if (i > 0 && is_ident(s[i - 1])) || definition {
            continue;
        }
        let args = arguments(s, i + helper.len());
        let arg = args.get(index).map_or("", String::as_str);
        names.insert(literal(arg).ok_or(format!("(passed to {helper} as {arg})"))?);
    }
    if names.is_empty() {
        return Err(format!("(no call of {helper})"));
    }
    Ok(names)
}

/// `const NAME: &str = "...";` definitions in `code`.
fn str_consts(code: &str, out: &mut BTreeMap<String, String>) {
    for (i, _) in code.match_indices("const ") {
        let rest = &code[i + "const ".len()..];
        let Some((name, rest)) = rest.split_once(':') else {
            continue;
        };
        let Some((ty, rest)) = rest.split_once('=') else {
            continue;
        };
        let ty: String = ty.split_whitespace().collect();
        if ty != "&str" && ty != "&'staticstr" {
            continue;
        }
        let value = rest.split(';').next().unwrap_or("").trim();
        if let Some(v) = literal(value) {
            out.insert(name.trim().to_string(), v);
        }
    }
}

/// The metrics one file's code emits, as (name, what, place) or the place of one it cannot read.
fn emitted_in(
    code: &str,
    file: &str,
    consts: &BTreeMap<String, String>,
) -> Vec<Result<(String, Metric, String), String>> {
    let s = code.as_bytes();
    let mut found = Vec::new();
    for kind in KINDS {
        for (i, _) in code.match_indices(&format!("{kind}!")) {
            if i > 0 && is_ident(s[i - 1]) {
                continue; // describe_counter!, a macro of another name
            }
            let line = code[..i].matches('\n').count() + 1;
            let place = format!("{file}:{line}");
            let mut open = i + kind.len() + 1;
            while s.get(open).is_some_and(|b| b.is_ascii_whitespace()) {
                open += 1;
            }
            if !matches!(s.get(open), Some(b'(' | b'[' | b'{')) {
                continue;
            }
            let args: Vec<String> = arguments(s, open)
                .into_iter()
                .filter(|a| {
                    !["target:", "level:", "parent:"]
                        .iter()
                        .any(|p| a.starts_with(p))
                })
                .collect();
            let Some(first) = args.first() else {
                found.push(Err(format!("{place}: {kind}! without a name")));
                continue;
            };
            let mut labels = BTreeSet::new();
            let mut unreadable = false;
            for arg in &args[1..] {
                match arg.split_once("=>").and_then(|(k, _)| literal(k.trim())) {
                    Some(key) => {
                        labels.insert(key);
                    }
                    None => unreadable = true,
                }
            }
            if unreadable {
                found.push(Err(format!("{place}: labels not as \"key\" => value")));
                continue;
            }
            let names = if let Some(name) = literal(first) {
                Ok([name].into())
            } else if let Some(name) = consts.get(first.rsplit("::").next().unwrap_or(first)) {
                Ok([name.clone()].into())
            } else {
                match helper_of(code, i, first) {
                    Some((helper, index, scope)) => helper_names(&helper, index, scope),
                    None => Err(String::new()),
                }
            };
            let names: BTreeSet<String> = match names {
                Ok(names) => names,
                Err(why) => {
                    found.push(Err(format!(
                        "{place}: the name {first} is not readable {why}"
                    )));
                    continue;
                }
            };
            for name in names {
                let metric = Metric {
                    kind: kind.to_string(),
                    labels: labels.clone(),
                };
                found.push(Ok((name, metric, place.clone())));
            }
        }
    }
    found
}

/// The metrics `docs/metrics.md`'s tables list: rows whose first cell is a backticked name.
fn documented(text: &str) -> Result<BTreeMap<String, Metric>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        let Some(name) = cells
            .first()
            .and_then(|c| c.trim().strip_prefix("`meridian_"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        if cells.len() < 4 {
            return Err(format!("line {}: name | type | labels | meaning", n + 1));
        }
        let labels = cells[2].split('`').skip(1).step_by(2).map(str::to_string);
        let metric = Metric {
            kind: cells[1].trim().to_string(),
            labels: labels.collect(),
        };
        if out.insert(format!("meridian_{name}"), metric).is_some() {
            return Err(format!("line {}: meridian_{name} listed twice", n + 1));
        }
    }
    Ok(out)
}

#[test]
fn every_metric_emitted_is_in_docs_metrics_md_and_every_one_listed_is_emitted() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in SCANNED {
        rust_files(&root.join(dir), &mut files);
    }
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{f:?}: {e}"));
            let name = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            (name, strip_comments(&text))
        })
        .collect();
    let mut consts = BTreeMap::new();
    for (_, code) in &sources {
        str_consts(code, &mut consts);
    }
    let mut problems = Vec::new();
    let mut emitted: BTreeMap<String, (Metric, Vec<String>)> = BTreeMap::new();
    for (file, code) in &sources {
        for found in emitted_in(code, file, &consts) {
            match found {
                Err(e) => problems.push(e),
                Ok((name, metric, place)) => {
                    let entry = emitted.entry(name.clone()).or_insert_with(|| {
                        let kind = metric.kind.clone();
                        (
                            Metric {
                                kind,
                                ..Metric::default()
                            },
                            Vec::new(),
                        )
                    });
                    if entry.0.kind != metric.kind {
                        problems.push(format!("{name} is a {} at {place}", metric.kind));
                    }
                    entry.0.labels.extend(metric.labels);
                    entry.1.push(place);
                }
            }
        }
    }
    assert!(
        emitted.len() >= 40,
        "only {} metrics found: the scan lost its way ({SCANNED:?})",
        emitted.len()
    );
    let doc = std::fs::read_to_string(root.join("docs/metrics.md")).expect("docs/metrics.md");
    let listed = documented(&doc).unwrap_or_else(|e| panic!("docs/metrics.md: {e}"));
    for (name, (metric, places)) in &emitted {
        match listed.get(name) {
            None => problems.push(format!(
                "{name} ({}) is emitted at {} but not in docs/metrics.md",
                metric.kind,
                places.join(", ")
            )),
            Some(doc) if doc != metric => problems.push(format!(
                "{name}: docs/metrics.md says {} with labels {:?}; the code emits a {} with {:?}",
                doc.kind, doc.labels, metric.kind, metric.labels
            )),
            Some(_) => {}
        }
    }
    for name in listed.keys().filter(|n| !emitted.contains_key(*n)) {
        problems.push(format!("{name} is in docs/metrics.md but nothing emits it"));
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_scan_reads_every_form_of_a_metric_and_refuses_what_it_cannot_read() {
    let src = r#"
        // metrics::counter!("meridian_in_a_comment_total")
        const NAMED: &str = "meridian_from_a_const";
        fn helper(peer: String) {
            let s = "a \" quote, a ( paren";
            let c = '"';
            metrics::counter!("meridian_plain_total", "reason" => "x").increment(1);
            counter!(target: "t", "meridian_imported_total").increment(1);
            metrics::describe_counter!("meridian_described", "not emitted");
            let gauge = |name: &'static str, v: f64| {
                let other = |x: u8| x;
                metrics::gauge!(name, "peer" => peer.clone()).set(v);
            };
            gauge("meridian_through_a_helper_bytes", 1.0);
            metrics::histogram!(NAMED).record(1.0);
        }
        fn by_fn(kind: u8, name: &'static str) {
            metrics::counter!(name).increment(1);
        }
        fn callers() {
            by_fn(1, "meridian_through_a_fn_total");
        }
        fn built() {
            metrics::counter!(format!("meridian_{}", 1)).increment(1);
            metrics::gauge!("meridian_sliced", &labels).set(0.0);
        }
    "#;
    let code = strip_comments(src);
    let mut consts = BTreeMap::new();
    str_consts(&code, &mut consts);
    let found = emitted_in(&code, "x.rs", &consts);
    let names: BTreeSet<(String, String, Vec<String>)> = found
        .iter()
        .filter_map(|f| f.as_ref().ok())
        .map(|(n, m, _)| {
            (
                n.clone(),
                m.kind.clone(),
                m.labels.iter().cloned().collect(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, Vec<String>)> = [
        ("meridian_plain_total", "counter", vec!["reason"]),
        ("meridian_imported_total", "counter", vec![]),
        ("meridian_through_a_helper_bytes", "gauge", vec!["peer"]),
        ("meridian_from_a_const", "histogram", vec![]),
        ("meridian_through_a_fn_total", "counter", vec![]),
    ]
    .into_iter()
    .map(|(n, k, l)| {
        (
            n.into(),
            k.into(),
            l.into_iter().map(String::from).collect(),
        )
    })
    .collect();
    assert_eq!(names, expected);
    let refused: Vec<&String> = found.iter().filter_map(|f| f.as_ref().err()).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].contains("format!"), "{refused:?}");
    assert!(refused[1].contains("labels"), "{refused:?}");
}
