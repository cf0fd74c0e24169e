// The caption metrics (pure, no TF, no I/O): corpus BLEU-1..4 (NLTK), CIDEr-D and ROUGE-L (coco-caption).
export * from './tokenize.js';
export * from './ngrams.js';
export * from './bleu.js';
export * from './cider.js';
export * from './rouge.js';
export * from './cider-reward.js';
