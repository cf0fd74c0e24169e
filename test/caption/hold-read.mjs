// Test-only preload (node --import): reading a file named hold.jpg announces itself on stderr and waits
// until the process gets SIGINT, then fails. Lets a test press Ctrl-C while a caption run is surely busy.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';

const readFile = fs.readFile.bind(fs);
let interrupted = false;
const waiting = [];
process.on('SIGINT', () => {
  interrupted = true;
  for (const w of waiting.splice(0)) w();
});
fs.readFile = async (file, ...rest) => {
  if (path.basename(String(file)) === 'hold.jpg') {
    process.stderr.write('test: holding hold.jpg\n');
    // a real blocked read holds a libuv request, which keeps the process alive: so does this timer
    const alive = setInterval(() => {}, 1 << 30);
    if (!interrupted) await new Promise((r) => waiting.push(r));
    clearInterval(alive);
    throw Object.assign(new Error('interrupted read'), { code: 'EINTR' });
  }
  return readFile(file, ...rest);
};
