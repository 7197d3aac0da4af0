// Renderer entry: one Vue app with Pinia; no Node APIs here, only the WebSocket client.
import { createApp } from 'vue';
import { createPinia } from 'pinia';
import App from './App.vue';
import { useVmsStore } from './stores/vms';
import './styles/app.css';

const pinia = createPinia();
const app = createApp(App).use(pinia);
// Both windows need the VM list: ask for it now, so the request travels while the app mounts.
void useVmsStore(pinia).load();
app.mount('#app');
