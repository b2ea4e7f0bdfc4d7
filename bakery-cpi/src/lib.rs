//! BOSH CPI for bakery: `run(input, output, config)` answers one CPI request.
