//! Random and mutated input: decoding returns, whatever the bytes.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

impl Mutation {
    fn apply(&self, buf: &mut Vec<u8>) {
        match self {
            Self::Insert(at, byte) => buf.insert(at.index(buf.len() + 1), *byte),
            _ if buf.is_empty() => {}
            Self::Set(at, byte) => {
                let i = at.index(buf.len());
                buf[i] = *byte;
            }
            Self::Remove(at) => {
                buf.remove(at.index(buf.len()));
            }
            Self::Truncate(at) => buf.truncate(at.index(buf.len())),
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that are likely to matter: tags, markers, and the edges of counts and lengths.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![
            0x00, 0x01, 0x7F, 0x80, 0xFF, b'B', b'C', b'R', b'N', b'K', b'O', b'n', b'u', b't',
            b'b',
        ]),
    ];
    prop_oneof![
        3 => (any::<Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<Index>().prop_map(Mutation::Remove),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// Decoding must return, Ok or Err, for anything; an error must also display without panicking.
fn decode_any(buf: &[u8]) {
    if let Err(e) = decode(buf) {
        assert!(!e.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn random_bytes_never_panic(
        tag in prop::sample::select(b"BCORYIUDTMSEcAx".to_vec()),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        decode_any(&body);
        let mut tagged = vec![tag];
        tagged.extend_from_slice(&body);
        decode_any(&tagged);
    }

    #[test]
    fn mutated_valid_messages_never_panic(
        which in any::<Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let messages = valid_messages();
        let mut buf = which.get(&messages).clone();
        for m in &mutations {
            m.apply(&mut buf);
        }
        decode_any(&buf);
    }
}
