//! `${VAR}` and `${VAR:-default}` expansion of string values, from the environment.

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    Unset(String),
    Unterminated,
    BadName(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unset(name) => write!(
                f,
                "environment variable `{name}` is not set; set it, or give a default like `${{{name}:-value}}`"
            ),
            Self::Unterminated => {
                write!(f, "`${{` is not closed; write variables like `${{PGPASSWORD}}`")
            }
            Self::BadName(name) => write!(
                f,
                "`{name}` is not a variable name; use letters, digits and `_`, e.g. `${{PGPASSWORD}}`"
            ),
        }
    }
}

/// Expands every `${NAME}` / `${NAME:-default}` in `input` using `lookup`. A `$` not followed by
/// `{` is kept as it is, so URLs and passwords with `$` need no escaping.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let body_and_rest = &rest[at + 2..];
        let end = body_and_rest.find('}').ok_or(ExpandError::Unterminated)?;
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ExpandError::BadName(name.to_string()));
        }
        match lookup(name).or_else(|| default.map(str::to_string)) {
            Some(value) => out.push_str(&value),
            None => return Err(ExpandError::Unset(name.to_string())),
        }
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PGPASSWORD" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        let cases = [
            (
                "postgres://u:${PGPASSWORD}@h/db",
                "postgres://u:s3cret@h/db",
            ),
            ("${MISSING:-fallback}", "fallback"),
            ("${MISSING:-}", ""),
            ("${PGPASSWORD:-unused}", "s3cret"),
            ("${EMPTY:-unused}", ""),
            ("a${PGPASSWORD}b${PGPASSWORD}c", "as3cretbs3cretc"),
            ("price $5 and $ {x}", "price $5 and $ {x}"),
            ("no variables", "no variables"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn reports_unset_unterminated_and_bad_names() {
        assert_eq!(
            expand("${NOPE}", &env),
            Err(ExpandError::Unset("NOPE".into()))
        );
        assert_eq!(
            expand("x ${PGPASSWORD", &env),
            Err(ExpandError::Unterminated)
        );
        assert_eq!(
            expand("${}", &env),
            Err(ExpandError::BadName(String::new()))
        );
        assert_eq!(
            expand("${A-B}", &env),
            Err(ExpandError::BadName("A-B".into()))
        );
        assert_eq!(
            expand("${1X}", &env),
            Err(ExpandError::BadName("1X".into()))
        );
        let message = expand("${NOPE}", &env).unwrap_err().to_string();
        assert_eq!(
            message,
            "environment variable `NOPE` is not set; set it, or give a default like `${NOPE:-value}`"
        );
    }
}
