//! Logging in on the replication connection.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::conn::{Conn, Frame};
use super::{AuthFailure, ReplicationError};
use crate::source::connect::ConnectSpec;

/// Logs in: trust, cleartext password, MD5 or SCRAM-SHA-256 (without channel binding).
pub(super) async fn authenticate(
    conn: &mut Conn,
    spec: &ConnectSpec,
) -> Result<(), ReplicationError> {
    let auth_err = |conn: &Conn, source| ReplicationError::Auth {
        addr: conn.addr.clone(),
        user: spec.user.clone(),
        source,
    };
    let password = || spec.password.as_deref().ok_or(AuthFailure::PasswordMissing);
    let mut scram: Option<ScramSha256> = None;
    loop {
        let message = match conn.read().await? {
            Frame::Message(message) => message,
            other => return Err(conn.unexpected(&other, "during authentication")),
        };
        match message {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                let password = password().map_err(|f| auth_err(conn, f))?;
                frontend::password_message(password.as_bytes(), &mut conn.wbuf)
                    .map_err(|e| conn.encode_err(e))?;
            }
            Message::AuthenticationMd5Password(body) => {
                let password = password().map_err(|f| auth_err(conn, f))?;
                let hash = md5_hash(spec.user.as_bytes(), password.as_bytes(), body.salt());
                frontend::password_message(hash.as_bytes(), &mut conn.wbuf)
                    .map_err(|e| conn.encode_err(e))?;
            }
            Message::AuthenticationSasl(body) => {
                let password = password().map_err(|f| auth_err(conn, f))?;
                let mut offered = Vec::new();
                let mut mechanisms = body.mechanisms();
                while let Some(m) = mechanisms.next().map_err(|e| conn.decode_err(e))? {
                    offered.push(m.to_string());
                }
                if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                    let offered = offered.join(", ");
                    return Err(auth_err(conn, AuthFailure::NoScram { offered }));
                }
                // "n": walhook does not do channel binding, so the server must not expect it.
                let state = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(
                    sasl::SCRAM_SHA_256,
                    state.message(),
                    &mut conn.wbuf,
                )
                .map_err(|e| conn.encode_err(e))?;
                scram = Some(state);
            }
            Message::AuthenticationSaslContinue(body) => {
                let Some(state) = scram.as_mut() else {
                    return Err(conn.protocol("SASLContinue before SASL".into()));
                };
                state
                    .update(body.data())
                    .map_err(|source| auth_err(conn, AuthFailure::Scram { source }))?;
                frontend::sasl_response(state.message(), &mut conn.wbuf)
                    .map_err(|e| conn.encode_err(e))?;
            }
            Message::AuthenticationSaslFinal(body) => {
                let Some(state) = scram.as_mut() else {
                    return Err(conn.protocol("SASLFinal before SASL".into()));
                };
                state
                    .finish(body.data())
                    .map_err(|source| auth_err(conn, AuthFailure::Scram { source }))?;
                continue;
            }
            Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                return Err(auth_err(
                    conn,
                    AuthFailure::Unsupported { method: "GSSAPI" },
                ))
            }
            Message::AuthenticationSspi => {
                return Err(auth_err(conn, AuthFailure::Unsupported { method: "SSPI" }))
            }
            Message::AuthenticationKerberosV5 => {
                return Err(auth_err(
                    conn,
                    AuthFailure::Unsupported {
                        method: "Kerberos V5",
                    },
                ))
            }
            Message::AuthenticationScmCredential => {
                return Err(auth_err(
                    conn,
                    AuthFailure::Unsupported {
                        method: "SCM credential",
                    },
                ))
            }
            Message::NoticeResponse(_) => continue,
            Message::ErrorResponse(body) => {
                return Err(match conn.server_err(&body) {
                    ReplicationError::Server { code, message, .. } if code.starts_with("28") => {
                        auth_err(conn, AuthFailure::Rejected { code, message })
                    }
                    other => other,
                })
            }
            other => return Err(conn.unexpected(&Frame::Message(other), "during authentication")),
        }
        conn.flush().await?;
    }
}
