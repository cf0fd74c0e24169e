// Whether this test process must have the native addon: in CI (which installs OpenBLAS), unless the run
// turned the addon off on purpose (CAPTIONER_NATIVE=0, as CI's second pass over the engine tests does, to
// test the configuration of a machine without OpenBLAS). Elsewhere tests that need it skip and say why.
export function addonRequired(): boolean {
  return process.env.CI === 'true' && process.env.CAPTIONER_NATIVE !== '0';
}
