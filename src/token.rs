//! The API token, kept out of logs and debug output.
//!
//! The token comes from a file (re-read before each retry after a 401, so
//! a rotated Kubernetes Secret or credentials file recovers without a
//! restart) or from the `COMFYCONTROL_TOKEN` environment variable.

use std::fmt;
use std::path::PathBuf;

/// Environment variable that carries the token when no file is given.
pub const TOKEN_VARIABLE: &str = "COMFYCONTROL_TOKEN";

/// A secret value whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token; surrounding white space, such as a file's final
    /// newline, is removed.
    pub fn new(value: &str) -> Token {
        Token(value.trim().to_owned())
    }

    /// Returns the raw value, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Token(redacted)")
    }
}

/// The source the token is read from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    File(PathBuf),
    Fixed(Token),
}

/// A failure to read the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("missing API token: set {TOKEN_VARIABLE} or pass --api.token-file PATH")]
    Missing,

    #[error(
        "failed to read the API token file {path}: {source} (check the path and its permissions)"
    )]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("API token file {0} is empty: write the token into it")]
    Empty(PathBuf),
}

impl TokenSource {
    /// Chooses the file when given, else the environment variable's value.
    pub fn from_settings(
        file: Option<PathBuf>,
        variable: Option<String>,
    ) -> Result<TokenSource, TokenError> {
        match (file, variable) {
            (Some(path), _) => Ok(TokenSource::File(path)),
            (None, Some(value)) if !value.trim().is_empty() => {
                Ok(TokenSource::Fixed(Token::new(&value)))
            }
            _ => Err(TokenError::Missing),
        }
    }

    /// Reads the current token.
    pub fn load(&self) -> Result<Token, TokenError> {
        match self {
            TokenSource::Fixed(token) => Ok(token.clone()),
            TokenSource::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
                        path: path.clone(),
                        source,
                    })?;
                let token = Token::new(&text);
                if token.0.is_empty() {
                    return Err(TokenError::Empty(path.clone()));
                }
                Ok(token)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let token = Token::new("cfc_secret123");

        assert!(!format!("{token:?}").contains("secret"));
        assert!(!format!("{:?}", TokenSource::Fixed(token)).contains("secret"));
    }

    #[test]
    fn file_token_is_trimmed_and_reread() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), "cfc_one\n").expect("write");
        let source = TokenSource::from_settings(Some(file.path().into()), None).expect("source");

        assert_eq!(source.load().expect("token").expose(), "cfc_one");

        std::fs::write(file.path(), "cfc_two").expect("write");
        assert_eq!(source.load().expect("token").expose(), "cfc_two");
    }

    #[test]
    fn missing_and_empty_tokens_are_errors() {
        assert!(matches!(
            TokenSource::from_settings(None, None),
            Err(TokenError::Missing)
        ));
        assert!(matches!(
            TokenSource::from_settings(None, Some("  ".into())),
            Err(TokenError::Missing)
        ));

        let file = tempfile::NamedTempFile::new().expect("temp file");
        let source = TokenSource::File(file.path().into());
        assert!(matches!(source.load(), Err(TokenError::Empty(_))));
    }
}
