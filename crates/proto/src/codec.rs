//! The codec of every generated client and server: prost encoding, with message buffers sized
//! for this platform's messages.
//!
//! tonic's default allocates 8 KiB to encode, and another 8 KiB to decode, every message of
//! every call; ours are a few hundred bytes (an event with its rewards) and lists rarely pass a
//! few KiB, so 1 KiB serves nearly all of them in one allocation and grows when needed.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial size of a message buffer; larger messages grow it.
pub const MESSAGE_BUFFER_BYTES: usize = 1024;

/// How much a server stream encodes before it yields (tonic's default).
const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(MESSAGE_BUFFER_BYTES, YIELD_THRESHOLD_BYTES)
}

/// [`ProstCodec`] with [`MESSAGE_BUFFER_BYTES`] buffers.
#[derive(Debug, Clone)]
pub struct SizedProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SizedProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SizedProstCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(buffer_settings())
    }
}

#[cfg(test)]
mod tests {
    use tonic::codec::{Decoder, Encoder};

    use super::*;
    use crate::event::v1::GetEventRequest;

    #[test]
    fn encoder_and_decoder_use_the_sized_buffers() {
        let mut codec = SizedProstCodec::<GetEventRequest, GetEventRequest>::default();
        let settings = format!("{:?}", codec.encoder().buffer_settings());
        assert!(settings.contains("buffer_size: 1024"), "{settings}");
        let settings = format!("{:?}", codec.decoder().buffer_settings());
        assert!(settings.contains("buffer_size: 1024"), "{settings}");
    }
}
