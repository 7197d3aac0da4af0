// Renderer entry: one Vue app with Pinia; no Node APIs here, only the WebSocket client.
import { createApp } from 'vue';
import { createPinia } from 'pinia';
import { z } from 'zod';
import App from './App.vue';
import './styles/app.css';

// zod probes `new Function` for speed; the CSP forbids eval, so tell it not to try (and not log violations).
z.config({ jitless: true });

createApp(App).use(createPinia()).mount('#app');
