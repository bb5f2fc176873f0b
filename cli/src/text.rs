//! Text from outside (file names, a server's metadata and headers) made safe for a
//! terminal: control characters (escape sequences that clear the screen, set the
//! title, or write the clipboard with OSC 52) are shown escaped, never sent raw.

/// `s` with every control character written as `\u{..}`.
pub(crate) fn shown(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(super::shown("plain/name.bin"), "plain/name.bin");
        assert_eq!(
            super::shown("\u{1b}]52;c;aGk=\u{7}x\u{9b}2J\n"),
            "\\u{1b}]52;c;aGk=\\u{7}x\\u{9b}2J\\u{a}"
        );
    }
}
