export * from './format.js';
export * from './table.js';
