//! Reading and writing SIP messages as text, the way the tests look at what crossed the wire.

/// The value of the first header `name` in a message text (full name, case-insensitive).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The Via header lines of a message, top first (full and compact names).
pub fn vias(msg: &str) -> Vec<&str> {
    msg.lines()
        .filter(|l| l.starts_with("Via:") || l.starts_with("v:"))
        .collect()
}

/// The URI inside a `<…>` name-addr (or the whole value up to its parameters when there are no
/// brackets).
pub fn uri_of(name_addr: &str) -> &str {
    match (name_addr.find('<'), name_addr.find('>')) {
        (Some(open), Some(close)) if open < close => &name_addr[open + 1..close],
        _ => name_addr.split(';').next().unwrap_or(name_addr),
    }
}

/// The first of `msgs` that starts with `start`; panics listing them all when none does.
pub fn first<'a>(msgs: &'a [String], start: &str) -> &'a str {
    msgs.iter()
        .find(|m| m.starts_with(start))
        .unwrap_or_else(|| panic!("no message starting with {start:?} in {msgs:#?}"))
}

/// The first 200 to an INVITE among `msgs`.
pub fn ok_to_invite(msgs: &[String]) -> &str {
    msgs.iter()
        .find(|m| m.starts_with("SIP/2.0 200") && m.contains("INVITE"))
        .unwrap_or_else(|| panic!("no 200 to INVITE in {msgs:#?}"))
}

/// The 200 a UAS sends for `request`: its Vias, From, Call-ID and CSeq as they came, its To
/// with the tag `to_tag`, and the headers named in `echoed` (e.g. a registrar's Contacts).
pub fn ok_for(request: &str, to_tag: &str, echoed: &[&str]) -> String {
    let head = request.split("\r\n\r\n").next().unwrap_or_default();
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in head.lines().skip(1) {
        let name = line.split(':').next().unwrap_or_default();
        if name == "To" {
            out.push_str(&format!("{line};tag={to_tag}\r\n"));
        } else if ["Via", "From", "Call-ID", "CSeq"].contains(&name) || echoed.contains(&name) {
            out.push_str(&format!("{line}\r\n"));
        }
    }
    out + "Content-Length: 0\r\n\r\n"
}
