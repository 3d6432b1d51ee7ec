//! The DMA server's error codes: fixed numbers that travel in replies (0 is never an error).

/// The error codes are part of the protocol, defined in `moat-dma-api`.
pub use moat_dma_api::DmaError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_zero_is_not_an_error() {
        for error in DmaError::ALL {
            assert_ne!(error.code(), 0);
            assert_eq!(DmaError::try_from(error.code()), Ok(error));
        }
        assert_eq!(DmaError::try_from(0), Err(0));
        assert_eq!(DmaError::try_from(13), Err(13));
        for (index, error) in DmaError::ALL.iter().enumerate() {
            assert_eq!(error.code() as usize, index + 1);
        }
    }
}
